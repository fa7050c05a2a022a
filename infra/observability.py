"""Alarms for what must never go unnoticed: a request that never started, or a workflow that died.

A DSR has a legal deadline (one month), so a lost or failed request is an incident, not a statistic.
With `-c alarmTopicArn=arn:aws:sns:...` every alarm notifies that topic (e.g. the privacy team's pager).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        dead_letter_queue: sqs.IQueue,
        bulk_dead_letter_queue: sqs.IQueue,
        state_machine: sfn.StateMachine,
        alarm_topic_arn: str | None,
    ) -> None:
        super().__init__(scope, construct_id)
        period = Duration.minutes(5)

        def not_empty(alarm_id: str, name: str, description: str, queue: sqs.IQueue) -> cloudwatch.Alarm:
            """Fires while a dead-letter queue holds a message: each one is work that did not start."""
            return cloudwatch.Alarm(
                self,
                alarm_id,
                alarm_name=f"dsrflow-{stage}-{name}",
                alarm_description=description,
                metric=queue.metric_approximate_number_of_messages_visible(
                    period=period, statistic=cloudwatch.Stats.MAXIMUM
                ),
                threshold=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=1,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )

        self.dlq_alarm = not_empty(
            "IntakeDeadLetters",
            "intake-dead-letters",
            "A CRM request could not be delivered to intake: it waits in the dead-letter queue "
            "(14 days). Fix the cause, then redrive the queue.",
            dead_letter_queue,
        )
        self.bulk_dlq_alarm = not_empty(
            "BulkDeadLetters",
            "bulk-dead-letters",
            "A file put under bulk/incoming/ did not start its batch: its S3 event waits in the bulk "
            "dead-letter queue (14 days). Fix the cause, then start the batch again (OPERATIONS.md, Bulk intake: "
            "a line started before is not started twice).",
            bulk_dead_letter_queue,
        )
        # Vendor failures are caught and recorded in the manifest; an execution itself fails only when
        # finalize cannot write it, so any failed or timed-out execution needs a human. Aborted executions are
        # not counted: POST /requests/{id}/cancel stops the execution on purpose and writes the manifest itself.
        self.execution_alarm = cloudwatch.Alarm(
            self,
            "ExecutionsNotSucceeded",
            alarm_name=f"dsrflow-{stage}-executions-not-succeeded",
            alarm_description="A dsrflow execution failed or timed out: its request has no manifest.",
            metric=cloudwatch.MathExpression(
                expression="failed + timedout",
                using_metrics={
                    "failed": state_machine.metric_failed(period=period, statistic=cloudwatch.Stats.SUM),
                    "timedout": state_machine.metric_timed_out(period=period, statistic=cloudwatch.Stats.SUM),
                },
                period=period,
            ),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

        if alarm_topic_arn:
            topic = sns.Topic.from_topic_arn(self, "AlarmTopic", alarm_topic_arn)
            for alarm in (self.dlq_alarm, self.bulk_dlq_alarm, self.execution_alarm):
                alarm.add_alarm_action(actions.SnsAction(topic))
