variable "name" {
  description = "Prefix for resource names (resource group, environment, job, app, identities, vault)."
  type        = string
  default     = "spendwatch"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.name))
    error_message = "name must be 2-15 characters: lower-case letters, digits and hyphens, starting with a letter (Key Vault names are at most 24 characters)."
  }
}

variable "location" {
  description = "Azure region, e.g. westeurope."
  type        = string
  default     = "westeurope"
}

variable "image" {
  description = "The spendwatch container image, with tag or digest (the environment pulls it anonymously: use a public image, or add a registry block)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/.+[:@].+$", var.image))
    error_message = "image must be a registry path with a tag or digest, e.g. acme.azurecr.io/spendwatch:1.0.0."
  }
}

variable "subscription_ids" {
  description = "Subscriptions spendwatch scans: the custom reader role is assignable in and assigned on each."
  type        = list(string)

  validation {
    condition     = length(var.subscription_ids) > 0 && alltrue([for s in var.subscription_ids : can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", s))])
    error_message = "subscription_ids must be one or more subscription GUIDs."
  }
}

variable "role_name" {
  description = "Name of the custom reader role (unique in the tenant). Null: the name the code declares (\"spendwatch reader\")."
  type        = string
  default     = null
}

variable "enable_quarantine" {
  description = "Assign the Slack app's identity the generated quarantine role (roles/quarantine.json) on each subscription, so the Quarantine button works; false for alerts only."
  type        = bool
  default     = true
}

variable "quarantine_role_name" {
  description = "Name of the custom quarantine role (unique in the tenant). Null: the name the code declares (\"spendwatch quarantine\")."
  type        = string
  default     = null
}

variable "schedule" {
  description = "Cron expression (UTC) for scans."
  type        = string
  default     = "*/15 * * * *"

  validation {
    condition     = length(split(" ", var.schedule)) == 5
    error_message = "schedule must be a five-field cron expression."
  }
}

variable "retrain_schedule" {
  description = "Cron expression (UTC) for the daily model retraining job (spendwatch model train --config)."
  type        = string
  default     = "30 3 * * *"

  validation {
    condition     = length(split(" ", var.retrain_schedule)) == 5
    error_message = "retrain_schedule must be a five-field cron expression."
  }
}

variable "retrain_timeout_seconds" {
  description = "Timeout of the retraining job's replica: it reads the baseline window's history (about 15 days), more than a scan."
  type        = number
  default     = 3600

  validation {
    condition     = var.retrain_timeout_seconds >= 60 && var.retrain_timeout_seconds <= 86400
    error_message = "retrain_timeout_seconds must be between 60 and 86400."
  }
}

variable "job_cpu" {
  description = "vCPUs of the scan job (consumption profile: 0.25-4, with memory = 2 GiB per vCPU)."
  type        = number
  default     = 1
}

variable "job_memory" {
  description = "Memory of the scan job, e.g. 2Gi (must pair with job_cpu as the consumption profile requires)."
  type        = string
  default     = "2Gi"

  validation {
    condition     = can(regex("^[0-9.]+Gi$", var.job_memory))
    error_message = "job_memory must look like 0.5Gi or 2Gi."
  }
}

variable "job_timeout_seconds" {
  description = "Timeout of one scan; keep it below the schedule interval."
  type        = number
  default     = 600

  validation {
    condition     = var.job_timeout_seconds >= 60 && var.job_timeout_seconds <= 86400
    error_message = "job_timeout_seconds must be between 60 and 86400."
  }
}

variable "app_min_replicas" {
  description = "Minimum replicas of the Slack app. 0 costs nothing idle but a cold start may miss Slack's 3-second acknowledgement."
  type        = number
  default     = 0

  validation {
    condition     = var.app_min_replicas >= 0 && var.app_min_replicas <= 3
    error_message = "app_min_replicas must be between 0 and 3."
  }
}

variable "slack_channel" {
  description = "Slack channel ID alerts go to (not a secret), e.g. C0123ALERTS."
  type        = string

  validation {
    condition     = can(regex("^[CG][A-Z0-9]{6,}$", var.slack_channel))
    error_message = "slack_channel must be a Slack channel ID such as C0123ALERTS."
  }
}

variable "environment" {
  description = "Extra environment variables for the job and the app (not for secrets)."
  type        = map(string)
  default     = {}
}

variable "use_database_url" {
  description = "The state is a PostgreSQL database whose URL you put in the vault's database-url secret: the module creates that secret, lets the scanner and Slack identities read it and passes it to the jobs and the app as SPENDWATCH_DATABASE_URL (set it before the first run: until then the secret holds the placeholder, which spendwatch refuses as not a postgresql:// URL). False: no such secret, role assignment or variable; the state is the configuration's [serve] state (or SPENDWATCH_STATE in environment), else a file inside each replica, lost when it stops: a trial only, since the jobs and the app must share state. Turning it off deletes the secret (the vault keeps it soft-deleted for 90 days)."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Log Analytics retention for the environment's logs."
  type        = number
  default     = 30

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 30 and 730."
  }
}

variable "alert_emails" {
  description = "E-mail addresses notified when a scan execution fails."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
