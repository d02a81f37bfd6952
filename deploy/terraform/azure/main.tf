# The scheduled scan job and the Slack app in one Container Apps environment. Identities in iam.tf, the vault
# in secrets.tf, alerting in alerts.tf. The same image runs `spendwatch serve --once` (one scan, then exit) in
# the job and `spendwatch serve --no-schedule` (Slack endpoint, /healthz and the approval sweep; no scans) in
# the app. Without --no-schedule the app would scan too, and its /healthz would turn 503 once its own scans were
# overdue (a replica scaled to zero runs none). A second job, `spendwatch model train --config`, retrains the
# baseline model daily.

locals {
  tags = merge({ "spendwatch-managed" = "true" }, var.tags)
  plain_environment = merge(var.environment, {
    SPENDWATCH_SLACK_CHANNEL = var.slack_channel
  })
  job_secrets = { for k, s in local.secrets : k => s if contains(s.readers, "scanner") }
  app_secrets = { for k, s in local.secrets : k => s if contains(s.readers, "slack") }
}

resource "azurerm_resource_group" "this" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = local.tags
}

resource "azurerm_log_analytics_workspace" "this" {
  name                = "${var.name}-logs"
  location            = azurerm_resource_group.this.location
  resource_group_name = azurerm_resource_group.this.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = local.tags
}

resource "azurerm_container_app_environment" "this" {
  name                       = "${var.name}-env"
  location                   = azurerm_resource_group.this.location
  resource_group_name        = azurerm_resource_group.this.name
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  tags                       = local.tags
}

resource "azurerm_container_app_job" "scan" {
  name                         = "${var.name}-scan"
  location                     = azurerm_resource_group.this.location
  resource_group_name          = azurerm_resource_group.this.name
  container_app_environment_id = azurerm_container_app_environment.this.id
  replica_timeout_in_seconds   = var.job_timeout_seconds
  # No retries: the next scheduled scan resumes from the watermarks.
  replica_retry_limit = 0
  tags                = local.tags

  schedule_trigger_config {
    cron_expression          = var.schedule
    parallelism              = 1
    replica_completion_count = 1
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.scanner.id]
  }

  dynamic "secret" {
    for_each = local.job_secrets
    content {
      name                = secret.key
      key_vault_secret_id = azurerm_key_vault_secret.this[secret.key].versionless_id
      identity            = azurerm_user_assigned_identity.scanner.id
    }
  }

  template {
    # Every secret of the job as a file; the configuration is /etc/spendwatch/spendwatch-toml.
    volume {
      name         = "config"
      storage_type = "Secret"
    }

    container {
      name    = "scan"
      image   = var.image
      cpu     = var.job_cpu
      memory  = var.job_memory
      command = ["spendwatch"]
      args    = ["serve", "--once", "--config", "/etc/spendwatch/spendwatch-toml"]

      volume_mounts {
        name = "config"
        path = "/etc/spendwatch"
      }

      dynamic "env" {
        for_each = merge(local.plain_environment, {
          AZURE_CLIENT_ID = azurerm_user_assigned_identity.scanner.client_id
        })
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = { for k, s in local.job_secrets : k => s if s.env != null }
        content {
          name        = env.value.env
          secret_name = env.key
        }
      }
    }
  }

  depends_on = [azurerm_role_assignment.secret_reader]
}

# Daily model retraining: `spendwatch model train --config` reads the live clouds' history (the scans read
# incrementally and hold too little of it) and keeps the model with the state (a PostgreSQL state's `models`
# table: the database-url secret's with use_database_url). Same image, identity, configuration and secrets as the
# scan job.
resource "azurerm_container_app_job" "retrain" {
  name                         = "${var.name}-retrain"
  location                     = azurerm_resource_group.this.location
  resource_group_name          = azurerm_resource_group.this.name
  container_app_environment_id = azurerm_container_app_environment.this.id
  replica_timeout_in_seconds   = var.retrain_timeout_seconds
  # No retries: the scans keep the last model until the next day's run.
  replica_retry_limit = 0
  tags                = local.tags

  schedule_trigger_config {
    cron_expression          = var.retrain_schedule
    parallelism              = 1
    replica_completion_count = 1
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.scanner.id]
  }

  dynamic "secret" {
    for_each = local.job_secrets
    content {
      name                = secret.key
      key_vault_secret_id = azurerm_key_vault_secret.this[secret.key].versionless_id
      identity            = azurerm_user_assigned_identity.scanner.id
    }
  }

  template {
    # Every secret of the job as a file; the configuration is /etc/spendwatch/spendwatch-toml.
    volume {
      name         = "config"
      storage_type = "Secret"
    }

    container {
      name    = "retrain"
      image   = var.image
      cpu     = var.job_cpu
      memory  = var.job_memory
      command = ["spendwatch"]
      args    = ["model", "train", "--config", "/etc/spendwatch/spendwatch-toml"]

      volume_mounts {
        name = "config"
        path = "/etc/spendwatch"
      }

      dynamic "env" {
        for_each = merge(local.plain_environment, {
          AZURE_CLIENT_ID = azurerm_user_assigned_identity.scanner.client_id
        })
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = { for k, s in local.job_secrets : k => s if s.env != null }
        content {
          name        = env.value.env
          secret_name = env.key
        }
      }
    }
  }

  depends_on = [azurerm_role_assignment.secret_reader]
}

resource "azurerm_container_app" "slack" {
  name                         = "${var.name}-slack"
  resource_group_name          = azurerm_resource_group.this.name
  container_app_environment_id = azurerm_container_app_environment.this.id
  revision_mode                = "Single"
  tags                         = local.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.slack.id]
  }

  dynamic "secret" {
    for_each = local.app_secrets
    content {
      name                = secret.key
      key_vault_secret_id = azurerm_key_vault_secret.this[secret.key].versionless_id
      identity            = azurerm_user_assigned_identity.slack.id
    }
  }

  # Slack cannot present Azure credentials; it signs each request and the app verifies the signature.
  ingress {
    external_enabled = true
    target_port      = 8080
    transport        = "auto"

    traffic_weight {
      latest_revision = true
      percentage      = 100
    }
  }

  template {
    min_replicas = var.app_min_replicas
    max_replicas = 3

    volume {
      name         = "config"
      storage_type = "Secret"
    }

    container {
      name    = "slack"
      image   = var.image
      cpu     = 0.5
      memory  = "1Gi"
      command = ["spendwatch"]
      args    = ["serve", "--no-schedule", "--config", "/etc/spendwatch/spendwatch-toml"]

      volume_mounts {
        name = "config"
        path = "/etc/spendwatch"
      }

      liveness_probe {
        transport = "HTTP"
        port      = 8080
        path      = "/healthz"
      }

      dynamic "env" {
        for_each = merge(local.plain_environment, {
          AZURE_CLIENT_ID = azurerm_user_assigned_identity.slack.client_id
        })
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = { for k, s in local.app_secrets : k => s if s.env != null }
        content {
          name        = env.value.env
          secret_name = env.key
        }
      }
    }
  }

  depends_on = [azurerm_role_assignment.secret_reader]
}
