# Identities. The reader role's actions come from roles/reader.json, generated from
# connectors/azure/permissions.py by deploy/terraform/gen_policies.py: nothing here lists one by hand.
# Azure quarantine actions do not exist yet, so there is no quarantine identity on Azure (see README).

locals {
  reader = jsondecode(file("${path.module}/roles/reader.json"))
  scopes = [for s in var.subscription_ids : "/subscriptions/${s}"]
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
