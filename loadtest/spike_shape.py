"""A sudden spike on a quiet baseline: how fast do replicas follow, and what fails meanwhile?"""

from __future__ import annotations

from locust import LoadTestShape


class SpikeShape(LoadTestShape):
    """`base_users` for `warmup_s`, `spike_users` (spawned at once) for `spike_s`, `base_users`
    again for `recovery_s`, then stop.
    """

    abstract = True  # used through ShapePicker (`--shape spike`)

    base_users = 2
    spike_users = 48
    warmup_s = 30
    spike_s = 60
    recovery_s = 120
    spawn_rate = 48.0

    def tick(self) -> tuple[int, float] | None:
        run_time = self.get_run_time()
        if run_time < self.warmup_s:
            return self.base_users, self.spawn_rate
        if run_time < self.warmup_s + self.spike_s:
            return self.spike_users, self.spawn_rate
        if run_time < self.warmup_s + self.spike_s + self.recovery_s:
            return self.base_users, self.spawn_rate
        return None
