"""The deadline watch: the sweep function on an hourly schedule, and the alarms on what it and finalize count.

A DSR has a legal deadline (one month, extendable by two): an overdue open request, or one that finished past
its deadline, needs a human now. The metrics are Powertools' (EMF in the functions' logs, namespace
POWERTOOLS_METRICS_NAMESPACE, dimension `service`), so no function needs cloudwatch:PutMetricData:

    RequestsOverdue       sweep (functions/core/watch.py), every hour: open requests past their deadline
    OpenRequests          sweep, every hour, 0 included: its absence means the watch itself is not running
    RequestsPastDeadline  finalize (functions/handlers/finalize.py): a request finished after its deadline

With `-c alarmTopicArn=arn:aws:sns:...` every alarm notifies that topic, as those of infra/observability.py do.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.functions import SERVICE

SCHEDULE = Duration.hours(1)
SILENT_PERIODS = 3  # hours without a sweep (OpenRequests missing) before the watch itself is alarmed


def powertools_metric(name: str, *, statistic: str, period: Duration) -> cloudwatch.Metric:
    """A metric as Powertools writes it: namespace = POWERTOOLS_METRICS_NAMESPACE, dimension service."""
    return cloudwatch.Metric(
        namespace=SERVICE,
        metric_name=name,
        dimensions_map={"service": SERVICE},
        statistic=statistic,
        period=period,
    )


class Watch(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        sweep: lambda_.IFunction,
        alarm_topic_arn: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.schedule = events.Rule(
            self,
            "Schedule",
            rule_name=f"dsrflow-{stage}-deadline-watch",
            description="dsrflow: the hourly deadline watch (sweep): warn before a deadline, count overdue requests",
            schedule=events.Schedule.rate(SCHEDULE),
            # A missed run is not retried for long: the next one comes within the hour.
            targets=[targets.LambdaFunction(sweep, retry_attempts=2, max_event_age=Duration.hours(1))],
        )

        self.overdue_alarm = self._above_zero(
            "RequestsOverdue",
            f"dsrflow-{stage}-requests-overdue",
            "An open data-subject request is past its GDPR deadline (the hourly deadline watch counts them). "
            "List them with GET /requests?due_before=<now> and finish, extend (only before the original "
            "deadline) or escalate each one.",
            powertools_metric("RequestsOverdue", statistic=cloudwatch.Stats.MAXIMUM, period=SCHEDULE),
        )
        self.past_deadline_alarm = self._above_zero(
            "RequestsPastDeadline",
            f"dsrflow-{stage}-requests-past-deadline",
            "A data-subject request finished after its GDPR deadline (finalize counts it): record the breach "
            "and tell the data subject; the manifest holds the times.",
            powertools_metric("RequestsPastDeadline", statistic=cloudwatch.Stats.SUM, period=SCHEDULE),
        )
        # The two alarms above stay quiet when the sweep does not run at all (missing data is not breaching), so
        # the watch is watched too: it puts OpenRequests on every run, 0 included.
        self.silent_alarm = cloudwatch.Alarm(
            self,
            "DeadlineWatchSilent",
            alarm_name=f"dsrflow-{stage}-deadline-watch-silent",
            alarm_description=(
                f"The hourly deadline watch (sweep function) has put no metrics for {SILENT_PERIODS} hours: overdue "
                "requests would go unnoticed. Check the sweep function's logs and errors and its schedule rule."
            ),
            metric=powertools_metric("OpenRequests", statistic=cloudwatch.Stats.SAMPLE_COUNT, period=SCHEDULE),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=SILENT_PERIODS,
            datapoints_to_alarm=SILENT_PERIODS,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        self.alarms = (self.overdue_alarm, self.past_deadline_alarm, self.silent_alarm)

        if alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", alarm_topic_arn)
            for alarm in self.alarms:
                alarm.add_alarm_action(actions.SnsAction(topic))

    def _above_zero(
        self, construct_id: str, name: str, description: str, metric: cloudwatch.Metric
    ) -> cloudwatch.Alarm:
        """An alarm on any count above zero in one period; no data (nothing counted) is not a breach."""
        return cloudwatch.Alarm(
            self,
            construct_id,
            alarm_name=name,
            alarm_description=description,
            metric=metric,
            threshold=0,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
