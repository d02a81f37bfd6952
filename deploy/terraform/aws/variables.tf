variable "name" {
  description = "Prefix for every resource this module creates (functions, roles, secrets, alarms)."
  type        = string
  default     = "spendwatch"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}$", var.name))
    error_message = "name must be 2-31 characters: lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "package_type" {
  description = "How the Lambda code ships: \"Image\" (the spendwatch container image in ECR) or \"Zip\" (a deployment package in S3)."
  type        = string
  default     = "Image"

  validation {
    condition     = contains(["Image", "Zip"], var.package_type)
    error_message = "package_type must be \"Image\" or \"Zip\"."
  }
}

variable "image_uri" {
  description = "ECR image URI (with tag or digest) when package_type is \"Image\"."
  type        = string
  default     = null

  validation {
    condition     = var.image_uri == null || can(regex("^[0-9]{12}\\.dkr\\.ecr\\.[a-z0-9-]+\\.amazonaws\\.com/.+[:@].+$", var.image_uri))
    error_message = "image_uri must be an ECR image URI with a tag or digest, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/spendwatch:1.0.0."
  }
}

variable "zip_s3_bucket" {
  description = "S3 bucket holding the deployment package when package_type is \"Zip\"."
  type        = string
  default     = null
}

variable "zip_s3_key" {
  description = "S3 key of the deployment package when package_type is \"Zip\"."
  type        = string
  default     = null
}

variable "runtime" {
  description = "Python runtime for a Zip package (ignored for images)."
  type        = string
  default     = "python3.11"

  validation {
    condition     = can(regex("^python3\\.(11|12|13)$", var.runtime))
    error_message = "runtime must be python3.11, python3.12 or python3.13."
  }
}

variable "architecture" {
  description = "Lambda architecture: x86_64 or arm64 (arm64 is about 20% cheaper per GB-second; the image must match)."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture must be x86_64 or arm64."
  }
}

variable "schedule_expression" {
  description = "EventBridge Scheduler expression for scans, e.g. \"rate(15 minutes)\" or \"cron(0/15 * * * ? *)\"."
  type        = string
  default     = "rate(15 minutes)"

  validation {
    condition     = can(regex("^(rate\\([0-9]+ (minute|minutes|hour|hours|day|days)\\)|cron\\(.+\\))$", var.schedule_expression))
    error_message = "schedule_expression must be rate(...) or cron(...)."
  }
}

variable "retrain_schedule_expression" {
  description = "EventBridge Scheduler expression for the daily model retraining (the scan function with {\"action\": \"retrain\"}), in UTC. Null: no retraining schedule (the scans keep the last model)."
  type        = string
  default     = "cron(30 3 * * ? *)"

  validation {
    condition     = var.retrain_schedule_expression == null || can(regex("^(rate\\([0-9]+ (hour|hours|day|days)\\)|cron\\(.+\\))$", var.retrain_schedule_expression))
    error_message = "retrain_schedule_expression must be rate(N hours|days), cron(...) or null."
  }
}

variable "schedule_interval_minutes" {
  description = "The schedule's interval in minutes, for the missing-heartbeat alarm (no successful run in two intervals alarms)."
  type        = number
  default     = 15

  validation {
    condition     = var.schedule_interval_minutes >= 1 && var.schedule_interval_minutes <= 720
    error_message = "schedule_interval_minutes must be between 1 and 720."
  }
}

variable "scan_memory_mb" {
  description = "Memory of the scheduled-scan function in MB (CPU grows with it)."
  type        = number
  default     = 2048

  validation {
    condition     = var.scan_memory_mb >= 512 && var.scan_memory_mb <= 10240
    error_message = "scan_memory_mb must be between 512 and 10240."
  }
}

variable "scan_timeout_seconds" {
  description = "Timeout of the scheduled-scan function; keep it below the schedule interval."
  type        = number
  default     = 600

  validation {
    condition     = var.scan_timeout_seconds >= 30 && var.scan_timeout_seconds <= 900
    error_message = "scan_timeout_seconds must be between 30 and 900 (Lambda's limit)."
  }
}

variable "slack_memory_mb" {
  description = "Memory of the Slack interaction function in MB."
  type        = number
  default     = 1024

  validation {
    condition     = var.slack_memory_mb >= 256 && var.slack_memory_mb <= 10240
    error_message = "slack_memory_mb must be between 256 and 10240."
  }
}

variable "slack_timeout_seconds" {
  description = "Timeout of the Slack interaction function: it acknowledges within 3 s and finishes the quarantine in a lazy listener."
  type        = number
  default     = 300

  validation {
    condition     = var.slack_timeout_seconds >= 10 && var.slack_timeout_seconds <= 900
    error_message = "slack_timeout_seconds must be between 10 and 900."
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

variable "config_toml" {
  description = "spendwatch's TOML configuration ([serve], [aws], [slack] tables; no secrets), passed as SPENDWATCH_CONFIG_TOML."
  type        = string

  validation {
    condition     = strcontains(var.config_toml, "[")
    error_message = "config_toml must be TOML text with at least one table, e.g. [serve]."
  }
}

variable "use_database_url" {
  description = "The state is a PostgreSQL database whose URL you put in the <name>/database-url secret: the module creates that secret, lets both functions read it and passes its name as SPENDWATCH_DATABASE_URL_SSM_PARAMETER (read at cold start, so fill it before the first invocation). False: no such secret; the state is state_path, else the handlers' /tmp default."
  type        = bool
  default     = false
}

variable "state_path" {
  description = "SPENDWATCH_STATE for both functions: a file path (e.g. an SQLite file on an EFS mount) or a postgresql:// URL. It wins over the database-url secret (SPENDWATCH_STATE comes before SPENDWATCH_DATABASE_URL); a URL here sits in plain text in the functions' environment and Terraform state, so put one with a password in the secret instead (use_database_url). Null: the secret's URL with use_database_url, else the handlers' default /tmp, per sandbox: a trial only, since the two functions must share state."
  type        = string
  default     = null

  validation {
    condition     = var.state_path == null || can(regex("^(/|postgres(ql)?://)", var.state_path))
    error_message = "state_path must be an absolute file path or a postgresql:// URL."
  }
}

variable "slack_allowed_users" {
  description = "Slack user IDs allowed to click Quarantine/Release (SPENDWATCH_SLACK_ALLOWED_USERS). Empty: see the Slack app's own rule."
  type        = list(string)
  default     = []
}

variable "slack_allowed_groups" {
  description = "Slack user group IDs allowed to click Quarantine/Release (SPENDWATCH_SLACK_ALLOWED_GROUPS)."
  type        = list(string)
  default     = []
}

variable "environment" {
  description = "Extra environment variables for both functions (not for secrets: those are read from Secrets Manager)."
  type        = map(string)
  default     = {}
}

variable "read_role_name" {
  description = "Name of the read role in each member account (the member-account submodule creates it with this name)."
  type        = string
  default     = "spendwatch-read"
}

variable "quarantine_role_name" {
  description = "Name of the quarantine role in each member account; only the Slack function may assume it."
  type        = string
  default     = "spendwatch-quarantine"
}

variable "member_account_ids" {
  description = "Accounts the scanner may assume the read role in and the Slack function the quarantine role in. Empty: any account (the roles' trust policies still decide)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.member_account_ids : can(regex("^[0-9]{12}$", a))])
    error_message = "member_account_ids must be 12-digit account IDs, as strings."
  }
}

variable "external_id" {
  description = "External ID the scanner passes when assuming member read roles, and the Slack function when assuming their quarantine roles (SPENDWATCH_AWS_EXTERNAL_ID; optional; set the same on the member-account module)."
  type        = string
  default     = null
}

variable "scan_this_account" {
  description = "Also create the read role (and quarantine role) in this account, via the member-account submodule."
  type        = bool
  default     = true
}

variable "enable_quarantine" {
  description = "Let the Slack function assume the quarantine roles (and create one here when scan_this_account). False: alerts only."
  type        = bool
  default     = true
}

variable "enable_approvals" {
  description = "GPU-launch approvals from Slack (spendwatch/approvals.py): the Slack function may put the approval policy and tags on this account's IAM users and roles, the scan function's sweep may remove them (never on spendwatch's own roles). False: approvals fail with an audited error."
  type        = bool
  default     = true
}

variable "enable_approver_role" {
  description = "GPU-launch approvals through the approver role in each principal's account (modules/member-account with approver_caller_arns = output approver_caller_arns; here too with scan_this_account): both functions may assume approver_role_name in member_account_ids (any account when empty) and get SPENDWATCH_AWS_APPROVER_ROLE_NAME, and lose enable_approvals' direct IAM permissions here. Needs enable_approvals. False: approvals reach this account's principals only."
  type        = bool
  default     = false
}

variable "approver_role_name" {
  description = "Name of the approver role in each account (the member-account submodule creates it with this name; the AWS guardrail's default approver is spendwatch-approver)."
  type        = string
  default     = "spendwatch-approver"
}

variable "athena" {
  description = "With an [aws.athena] table in config_toml (flow logs and/or CUR reduced in Athena, not fetched): the workgroup, the Glue database and flow log table with the table's bucket, the CUR 2.0 table (cur_table, in cur_database, default database) with the bucket of the CUR export, and the query results bucket the scan function may use (policies/athena.json, each statement narrowed to these). Set table or cur_table or both, each with its bucket. catalog_account: the Glue catalog's account (default this one); region: the workgroup's (default this one). role_arn: the [aws.athena] role_arn the queries run as (a role in the account that owns the tables, holding the statements of policies/athena.json): the scan role is then only allowed to assume it. Null: no Athena permission."
  type = object({
    workgroup          = string
    database           = string
    table              = optional(string)
    table_bucket_arn   = optional(string)
    cur_table          = optional(string)
    cur_database       = optional(string)
    cur_bucket_arn     = optional(string)
    results_bucket_arn = string
    catalog_account    = optional(string)
    region             = optional(string)
    role_arn           = optional(string)
  })
  default = null

  validation {
    condition     = var.athena == null ? true : alltrue([for b in [var.athena.table_bucket_arn, var.athena.cur_bucket_arn, var.athena.results_bucket_arn] : can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", b)) if b != null])
    error_message = "athena.table_bucket_arn, athena.cur_bucket_arn and athena.results_bucket_arn must be S3 bucket ARNs (arn:aws:s3:::name)."
  }

  validation {
    condition     = var.athena == null ? true : var.athena.role_arn == null ? (var.athena.table != null || var.athena.cur_table != null) && (var.athena.table == null) == (var.athena.table_bucket_arn == null) && (var.athena.cur_table == null) == (var.athena.cur_bucket_arn == null) : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/", var.athena.role_arn))
    error_message = "athena: set table (with table_bucket_arn), cur_table (with cur_bucket_arn), or both; or role_arn, an IAM role ARN."
  }
}

variable "s3_bucket_arns" {
  description = "Buckets spendwatch reads (CloudTrail, CUR, flow logs, metric streams). The read policy grants s3:ListBucket on these and s3:GetObject on their objects only. Empty: the S3 statement keeps Resource \"*\" as the code prints it."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for b in var.s3_bucket_arns : can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", b))])
    error_message = "s3_bucket_arns must be bucket ARNs without a key, e.g. arn:aws:s3:::acme-cloudtrail."
  }
}

variable "s3_kms_key_arns" {
  description = "KMS keys that encrypt those buckets' objects (SSE-KMS); the read policy adds kms:Decrypt on them via S3 only. Empty: none."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for k in var.s3_kms_key_arns : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", k))])
    error_message = "s3_kms_key_arns must be KMS key ARNs."
  }
}

variable "vpc_subnet_ids" {
  description = "Subnets for both functions when the state database (PostgreSQL) is in a VPC; they need a NAT route to Slack and AWS APIs. Empty: no VPC."
  type        = list(string)
  default     = []
}

variable "vpc_security_group_ids" {
  description = "Security groups for the functions when vpc_subnet_ids is set."
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention for both functions."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of the values CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ..., 3653)."
  }
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm). Empty: subscribe something else to the topic output."
  type        = list(string)
  default     = []
}

variable "tracing_mode" {
  description = "X-Ray tracing mode for the functions: Active or PassThrough."
  type        = string
  default     = "Active"

  validation {
    condition     = contains(["Active", "PassThrough"], var.tracing_mode)
    error_message = "tracing_mode must be Active or PassThrough."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
