output "read_role_arn" {
  description = "The read role the scanner assumes in this account."
  value       = aws_iam_role.read.arn
}

output "quarantine_role_arn" {
  description = "The quarantine role the Slack function assumes in this account (null when not created)."
  value       = local.quarantine ? aws_iam_role.quarantine[0].arn : null
}

output "approver_role_arn" {
  description = "The approver role the spendwatch functions assume in this account for GPU-launch approvals (null when not created)."
  value       = local.approver ? aws_iam_role.approver[0].arn : null
}
