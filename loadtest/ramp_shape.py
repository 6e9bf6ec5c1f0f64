"""A slow ramp: users rise steadily from a quiet baseline to a peak, hold, and fall back, so an
autoscaler meets a load that grows by a little at a time rather than in one step."""

from __future__ import annotations

from locust import LoadTestShape


class RampShape(LoadTestShape):
    """`base_users` rising linearly to `peak_users` over `ramp_s` seconds, a hold at the peak for
    `hold_s`, then `base_users` for `cooldown_s`, then stop.
    """

    abstract = True  # used through ShapePicker (`--shape ramp`)

    base_users = 2
    peak_users = 32
    ramp_s = 240
    hold_s = 30
    cooldown_s = 120
    spawn_rate = 4.0

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        if run_time < self.ramp_s:
            rise = (self.peak_users - self.base_users) * run_time / self.ramp_s
            return self.base_users + int(rise), self.spawn_rate
        if run_time < self.ramp_s + self.hold_s:
            return self.peak_users, self.spawn_rate
        if run_time < self.ramp_s + self.hold_s + self.cooldown_s:
            return self.base_users, self.spawn_rate
        return None
