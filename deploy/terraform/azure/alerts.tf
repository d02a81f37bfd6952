# Failed runs reach people: any failed execution of the scan job.

resource "azurerm_monitor_action_group" "this" {
  name                = "${var.name}-alerts"
  resource_group_name = azurerm_resource_group.this.name
  short_name          = substr(replace(var.name, "-", ""), 0, 12)
  tags                = local.tags

  dynamic "email_receiver" {
    for_each = toset(var.alert_emails)
    content {
      name                    = "email-${index(var.alert_emails, email_receiver.value)}"
      email_address           = email_receiver.value
      use_common_alert_schema = true
    }
  }
}

resource "azurerm_monitor_metric_alert" "scan_failed" {
  name                = "${var.name}-scan-failed"
  resource_group_name = azurerm_resource_group.this.name
  scopes              = [azurerm_container_app_job.scan.id]
  description         = "A spendwatch scan execution failed: az containerapp job execution list -n ${azurerm_container_app_job.scan.name} -g ${azurerm_resource_group.this.name}"
  severity            = 2
  frequency           = "PT5M"
  window_size         = "PT15M"
  tags                = local.tags

  criteria {
    metric_namespace = "Microsoft.App/jobs"
    metric_name      = "Executions"
    aggregation      = "Total"
    operator         = "GreaterThan"
    threshold        = 0

    dimension {
      name     = "state"
      operator = "Include"
      values   = ["Failed"]
    }
  }

  action {
    action_group_id = azurerm_monitor_action_group.this.id
  }
}
