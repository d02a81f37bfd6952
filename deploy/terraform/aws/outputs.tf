output "slack_request_url" {
  description = "Paste into the Slack app's Interactivity Request URL."
  value       = aws_lambda_function_url.slack.function_url
}

output "scan_function_name" {
  description = "The scheduled-scan function (invoke it by hand to test: aws lambda invoke --function-name ...)."
  value       = aws_lambda_function.scan.function_name
}

output "slack_function_name" {
  description = "The Slack interaction function."
  value       = aws_lambda_function.slack.function_name
}

output "scanner_role_arn" {
  description = "Pass to the member-account module in every member account (scanner_role_arn)."
  value       = aws_iam_role.scan.arn
}

output "slack_role_arn" {
  description = "Pass to the member-account module in every member account (quarantine_caller_arn)."
  value       = aws_iam_role.slack.arn
}

output "secret_arns" {
  description = "Secrets to fill out of band (aws secretsmanager put-secret-value)."
  value       = { for k, s in aws_secretsmanager_secret.this : k => s.arn }
}

output "kms_key_arn" {
  description = "The key encrypting secrets, environment, logs and the alarm topic."
  value       = aws_kms_key.this.arn
}

output "alarm_topic_arn" {
  description = "SNS topic the alarms publish to; subscribe a pager or chat integration."
  value       = aws_sns_topic.alarms.arn
}

output "read_policy_json" {
  description = "The read policy as attached (the code's declared set, S3 narrowed to the given buckets)."
  value       = module.read_policy.json
}

output "approver_role_arns" {
  description = "The roles that change the spendwatch:gpu-approval tags (Slack applies, the scan's sweep removes; with enable_approver_role, the approver roles in the accounts): with the AWS guardrail (spendwatch guardrail aws), its approver ARN pattern must match them, or its tag Deny refuses them."
  value       = local.approver_role ? local.approver_role_arns : (var.enable_approvals ? [aws_iam_role.slack.arn, aws_iam_role.scan.arn] : [])
}

output "approver_caller_arns" {
  description = "Pass to the member-account module in every member account (approver_caller_arns) with enable_approver_role: the roles its approver role trusts. Empty otherwise."
  value       = local.approver_role ? [aws_iam_role.slack.arn, aws_iam_role.scan.arn] : []
}
