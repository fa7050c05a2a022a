"""The CloudWatch dashboard `dsrflow-<stage>`: what the requests, the vendors and the machinery are doing.

Every dsrflow metric it plots is one the functions put (Powertools EMF in their logs, namespace
POWERTOOLS_METRICS_NAMESPACE = "dsrflow", dimension service=dsrflow; tests/infra/test_infra_dashboard.py checks
each name against the code):

    RequestsReceived                      intake, a new request accepted (a duplicate is not counted)
    Requests_<status>                     finalize: completed, partially_failed, failed
    RequestsPastDeadline                  finalize: finished after its deadline
    OpenRequests / RequestsDueSoon / RequestsOverdue   the hourly deadline watch (sweep)
    <vendor>.<step>.error                 a job-loop step (submit, check, collect) that failed
    <vendor>.<step>.duration              how long a job-loop step ran, in ms (success or failure)
    <vendor>.time_to_complete             a completed vendor action: its job's submission to its collection, s

The rest is AWS's own: the intake dead-letter queue's depth, each function's errors, throttles and p95
duration, and the state machine's failed and timed-out executions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.watch import SCHEDULE, powertools_metric

DAY = Duration.days(1)
HOUR = Duration.hours(1)
FIVE_MINUTES = Duration.minutes(5)
# The job-loop steps (core.tasks.STEP_NAMES; not imported: infra does not load the Lambda code's dependencies).
STEPS = ("submit", "check", "collect")
# What finalize can count (core.tasks.summarise); "cancelled" is written by the cancel route, not finalize.
FINISHED = ("completed", "partially_failed", "failed")

FULL, HALF, THIRD = 24, 12, 8
HEIGHT = 6


def _graph(
    title: str,
    metrics: Sequence[cloudwatch.IMetric],
    *,
    width: int = HALF,
    label: str | None = None,
    stacked: bool = False,
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title,
        left=list(metrics),
        width=width,
        height=HEIGHT,
        stacked=stacked,
        left_y_axis=cloudwatch.YAxisProps(min=0, label=label, show_units=label is None),
    )


class Dashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        vendors: Sequence[str],
        functions: Mapping[str, lambda_.IFunction],
        state_machine: sfn.IStateMachine,
        dead_letter_queue: sqs.IQueue,
        alarms: Iterable[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"dsrflow-{stage}",
            default_interval=Duration.days(14),
        )
        self.dashboard_name = self.dashboard.dashboard_name

        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown=(
                    f"# dsrflow ({stage})\n"
                    "Data-subject requests across the vendors. What each alarm and outcome means, and what to do: "
                    "OPERATIONS.md. Counts are per day unless a title says otherwise."
                ),
                width=FULL,
                height=2,
            )
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(alarms), width=FULL, height=3)
        )

        def per_day(name: str, label: str) -> cloudwatch.Metric:
            return powertools_metric(name, statistic=cloudwatch.Stats.SUM, period=DAY).with_(label=label)

        def watched(name: str, label: str) -> cloudwatch.Metric:
            return powertools_metric(name, statistic=cloudwatch.Stats.MAXIMUM, period=SCHEDULE).with_(label=label)

        self.dashboard.add_widgets(
            _graph(
                "Requests per day: received and finished",
                [
                    per_day("RequestsReceived", "received"),
                    *(per_day(f"Requests_{status}", status.replace("_", " ")) for status in FINISHED),
                    per_day("RequestsPastDeadline", "finished past its deadline"),
                ],
                label="requests",
            ),
            _graph(
                "Open requests and deadlines (hourly deadline watch)",
                [
                    watched("OpenRequests", "open"),
                    watched("RequestsDueSoon", "due within 7 days"),
                    watched("RequestsOverdue", "overdue"),
                ],
                label="requests",
            ),
        )

        for vendor in vendors:
            self.dashboard.add_widgets(
                _graph(
                    f"{vendor}: step errors per hour",
                    [
                        powertools_metric(f"{vendor}.{step}.error", statistic=cloudwatch.Stats.SUM, period=HOUR).with_(
                            label=step
                        )
                        for step in STEPS
                    ],
                    label="errors",
                ),
                _graph(
                    f"{vendor}: step duration (p95, hourly)",
                    [
                        powertools_metric(
                            f"{vendor}.{step}.duration", statistic=cloudwatch.Stats.p(95), period=HOUR
                        ).with_(label=step)
                        for step in STEPS
                    ],
                ),
            )

        time_to_complete: list[cloudwatch.IMetric] = []
        for i, vendor in enumerate(vendors):
            for stat, word in ((cloudwatch.Stats.AVERAGE, "average"), (cloudwatch.Stats.MAXIMUM, "slowest")):
                metric = powertools_metric(f"{vendor}.time_to_complete", statistic=stat, period=DAY)
                time_to_complete.append(
                    cloudwatch.MathExpression(
                        expression=f"{word}{i} / 3600",
                        using_metrics={f"{word}{i}": metric},
                        label=f"{vendor} ({word})",
                        period=DAY,
                    )
                )
        self.dashboard.add_widgets(
            _graph("Time to complete per vendor (submitted to collected, per day)", time_to_complete, label="hours"),
            _graph(
                "Intake dead-letter queue depth",
                [
                    dead_letter_queue.metric_approximate_number_of_messages_visible(
                        period=FIVE_MINUTES, statistic=cloudwatch.Stats.MAXIMUM, label="messages waiting"
                    )
                ],
                width=6,
                label="messages",
            ),
            _graph(
                "Executions failed and timed out",
                [
                    state_machine.metric_failed(period=FIVE_MINUTES, statistic=cloudwatch.Stats.SUM, label="failed"),
                    state_machine.metric_timed_out(
                        period=FIVE_MINUTES, statistic=cloudwatch.Stats.SUM, label="timed out"
                    ),
                ],
                width=6,
                label="executions",
            ),
        )

        named = sorted(functions.items())
        self.dashboard.add_widgets(
            _graph(
                "Lambda errors",
                [fn.metric_errors(period=FIVE_MINUTES, statistic=cloudwatch.Stats.SUM, label=n) for n, fn in named],
                width=THIRD,
                label="errors",
            ),
            _graph(
                "Lambda throttles",
                [fn.metric_throttles(period=FIVE_MINUTES, statistic=cloudwatch.Stats.SUM, label=n) for n, fn in named],
                width=THIRD,
                label="throttles",
            ),
            _graph(
                "Lambda duration (p95)",
                [fn.metric_duration(period=FIVE_MINUTES, statistic=cloudwatch.Stats.p(95), label=n) for n, fn in named],
                width=THIRD,
            ),
        )
