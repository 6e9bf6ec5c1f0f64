"""`--shape step|spike|ramp|none` (or LOCUST_SHAPE) picks the load curve when Locust starts.

Locust uses the first shape class it finds and has no command-line switch between several, so
this one shape delegates to the chosen curve; `none` (the default) follows -u/-r/-t as if there
were no shape at all.
"""

from __future__ import annotations

from locust import LoadTestShape, events
from ramp_shape import RampShape  # locust -f loadtest/ puts this folder on sys.path
from spike_shape import SpikeShape
from step_shape import StepUpDownShape

SHAPES: dict[str, type[LoadTestShape]] = {
    "step": StepUpDownShape,
    "spike": SpikeShape,
    "ramp": RampShape,
}


@events.init_command_line_parser.add_listener
def add_shape_option(parser) -> None:
    parser.add_argument(
        "--shape",
        choices=["none", *SHAPES],
        default="none",
        env_var="LOCUST_SHAPE",
        help="Load curve: step (up, hold, down), spike, ramp (slow rise), or none (use -u/-r/-t)",
    )


class ShapePicker(LoadTestShape):
    use_common_options = True  # keep -u/-r/-t (and the web UI's fields) for `--shape none`

    def __init__(self) -> None:
        super().__init__()
        self._curve: LoadTestShape | None = None

    def curve(self) -> LoadTestShape | None:
        name = getattr(self.runner.environment.parsed_options, "shape", "none")
        if name == "none":
            return None
        if self._curve is None or type(self._curve) is not SHAPES[name]:
            self._curve = SHAPES[name]()
            self._curve.runner = self.runner
            self._curve.get_run_time = lambda: self.get_run_time()  # one clock for both
        return self._curve

    def tick(self) -> tuple[int, float] | None:
        # With a shape, Locust leaves -t to it: stop once it has passed, whatever the curve.
        options = self.runner.environment.parsed_options
        if options.run_time and self.get_run_time() >= options.run_time:
            return None
        curve = self.curve()
        if curve is not None:
            return curve.tick()
        return options.num_users or 1, options.spawn_rate or 1
