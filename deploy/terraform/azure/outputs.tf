output "slack_request_url" {
  description = "Paste into the Slack app's Interactivity Request URL (append the path the app serves Slack on, e.g. /slack/events)."
  value       = "https://${azurerm_container_app.slack.ingress[0].fqdn}"
}

output "scan_job_name" {
  description = "The scan job (start it by hand: az containerapp job start ...)."
  value       = azurerm_container_app_job.scan.name
}

output "key_vault_name" {
  description = "Vault holding the secrets to set out of band (az keyvault secret set)."
  value       = azurerm_key_vault.this.name
}

output "scanner_principal_id" {
  description = "The read identity (user-assigned managed identity), assigned the custom reader role on each subscription."
  value       = azurerm_user_assigned_identity.scanner.principal_id
}

output "reader_role_definition_id" {
  description = "The custom reader role."
  value       = azurerm_role_definition.reader.role_definition_resource_id
}

output "slack_principal_id" {
  description = "The Slack app's identity (user-assigned managed identity): assigned the quarantine role on each subscription when enable_quarantine."
  value       = azurerm_user_assigned_identity.slack.principal_id
}

output "quarantine_role_definition_id" {
  description = "The custom quarantine role (null when enable_quarantine is false)."
  value       = var.enable_quarantine ? azurerm_role_definition.quarantine[0].role_definition_resource_id : null
}
