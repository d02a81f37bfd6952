# Failed runs reach people: function errors, and a scan that has not succeeded for two schedule intervals
# (the scheduler stopped, the function cannot start, or every run fails).

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.this.arn
  tags              = local.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each  = toset(var.alarm_emails)
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

resource "aws_cloudwatch_metric_alarm" "scan_errors" {
  alarm_name          = "${var.name}-scan-errors"
  alarm_description   = "spendwatch: a scheduled scan failed (see /aws/lambda/${local.scan_function_name})."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.scan.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "scan_heartbeat" {
  alarm_name          = "${var.name}-scan-heartbeat"
  alarm_description   = "spendwatch: no successful scan in ${2 * var.schedule_interval_minutes} minutes."
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
  tags                = local.tags

  metric_query {
    id          = "successes"
    expression  = "invocations - FILL(errors, 0)"
    label       = "Successful scans"
    return_data = true
  }

  metric_query {
    id = "invocations"
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Invocations"
      dimensions  = { FunctionName = aws_lambda_function.scan.function_name }
      stat        = "Sum"
      period      = var.schedule_interval_minutes * 60
    }
  }

  metric_query {
    id = "errors"
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Errors"
      dimensions  = { FunctionName = aws_lambda_function.scan.function_name }
      stat        = "Sum"
      period      = var.schedule_interval_minutes * 60
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "slack_errors" {
  alarm_name          = "${var.name}-slack-errors"
  alarm_description   = "spendwatch: the Slack interaction function failed (a click may not have been acted on)."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.slack.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  tags                = local.tags
}

resource "aws_cloudwatch_metric_alarm" "failed_invocations" {
  alarm_name          = "${var.name}-failed-invocations"
  alarm_description   = "spendwatch: an asynchronous invocation (schedule or Slack lazy listener) was dropped into ${aws_sqs_queue.failed.name}."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.failed.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  tags                = local.tags
}
