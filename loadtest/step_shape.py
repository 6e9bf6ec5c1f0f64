"""Step up, hold, step down: watch replicas scale up with the load and back down after it."""

from __future__ import annotations

from locust import LoadTestShape


class StepUpDownShape(LoadTestShape):
    """`step_users` more users every `step_s` seconds up to `peak_users`, a hold at the peak for
    `hold_s`, then back to `base_users` for `cooldown_s` (longer than the Serve config's
    downscale_delay_s, so the scale-down shows), then stop.
    """

    abstract = True  # used through ShapePicker (`--shape step`)

    base_users = 2
    step_users = 8
    step_s = 20
    peak_users = 32
    hold_s = 90
    cooldown_s = 120
    spawn_rate = 8.0

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        ramp_s = self.step_s * ((self.peak_users - self.base_users) // self.step_users + 1)
        if run_time < ramp_s:
            steps = int(run_time // self.step_s)
            return min(self.peak_users, self.base_users + steps * self.step_users), self.spawn_rate
        if run_time < ramp_s + self.hold_s:
            return self.peak_users, self.spawn_rate
        if run_time < ramp_s + self.hold_s + self.cooldown_s:
            return self.base_users, self.spawn_rate
        return None
