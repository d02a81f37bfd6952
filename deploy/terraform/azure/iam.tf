# Identities. The reader role's actions come from roles/reader.json, generated from
# connectors/azure/permissions.py, and the quarantine role's from roles/quarantine.json, generated from the Azure
# actions' declared operations (spendwatch/actions/azure.py), both by deploy/terraform/gen_policies.py: nothing
# here lists one by hand. Only the Slack app's identity holds the quarantine role.

locals {
  reader     = jsondecode(file("${path.module}/roles/reader.json"))
  quarantine = jsondecode(file("${path.module}/roles/quarantine.json"))
  scopes     = [for s in var.subscription_ids : "/subscriptions/${s}"]
}

resource "azurerm_user_assigned_identity" "scanner" {
  name                = "${var.name}-scanner"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "slack" {
  name                = "${var.name}-slack"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  tags                = local.tags
}

resource "azurerm_role_definition" "reader" {
  name              = coalesce(var.role_name, local.reader.Name)
  scope             = local.scopes[0]
  description       = local.reader.Description
  assignable_scopes = local.scopes

  permissions {
    actions          = local.reader.Actions
    not_actions      = local.reader.NotActions
    data_actions     = local.reader.DataActions
    not_data_actions = local.reader.NotDataActions
  }
}

resource "azurerm_role_assignment" "reader" {
  for_each = toset(local.scopes)

  scope              = each.value
  role_definition_id = azurerm_role_definition.reader.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.scanner.principal_id
  principal_type     = "ServicePrincipal"
}

# The quarantine role: what the Slack buttons (azure.quarantine, azure.release) may do, assigned to the Slack
# app's identity alone on each subscription. enable_quarantine = false leaves it out (alerts only).
resource "azurerm_role_definition" "quarantine" {
  count = var.enable_quarantine ? 1 : 0

  name              = coalesce(var.quarantine_role_name, local.quarantine.Name)
  scope             = local.scopes[0]
  description       = local.quarantine.Description
  assignable_scopes = local.scopes

  permissions {
    actions          = local.quarantine.Actions
    not_actions      = local.quarantine.NotActions
    data_actions     = local.quarantine.DataActions
    not_data_actions = local.quarantine.NotDataActions
  }
}

resource "azurerm_role_assignment" "quarantine" {
  for_each = var.enable_quarantine ? toset(local.scopes) : toset([])

  scope              = each.value
  role_definition_id = azurerm_role_definition.quarantine[0].role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.slack.principal_id
  principal_type     = "ServicePrincipal"
}
