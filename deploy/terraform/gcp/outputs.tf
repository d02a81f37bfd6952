output "slack_request_url" {
  description = "Paste into the Slack app's Interactivity Request URL (append the path the service serves Slack on, e.g. /slack/events)."
  value       = google_cloud_run_v2_service.slack.uri
}

output "scan_job_name" {
  description = "The scan job (run it by hand: gcloud run jobs execute ...)."
  value       = google_cloud_run_v2_job.scan.name
}

output "scanner_service_account" {
  description = "The read identity; bound to the custom reader role."
  value       = google_service_account.scanner.email
}

output "slack_service_account" {
  description = "The Slack service's identity: holds the quarantine role (when enable_quarantine) and nothing else in the scanned projects."
  value       = google_service_account.slack.email
}

output "quarantine_role_names" {
  description = "The custom quarantine role(s) as bound to the Slack service's account (empty when enable_quarantine is false)."
  value       = concat([for r in google_organization_iam_custom_role.quarantine : r.name], [for r in google_project_iam_custom_role.quarantine : r.name])
}

output "reader_role_names" {
  description = "The custom reader role(s) as bound."
  value       = concat([for r in google_organization_iam_custom_role.reader : r.name], [for r in google_project_iam_custom_role.reader : r.name])
}

output "secret_ids" {
  description = "Secrets to fill out of band (gcloud secrets versions add)."
  value       = { for k, s in google_secret_manager_secret.this : k => s.id }
}
