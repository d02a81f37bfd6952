variable "scanner_role_arn" {
  description = "The spendwatch scanner role (output scanner_role_arn of the aws module): the only principal the read role trusts."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.scanner_role_arn))
    error_message = "scanner_role_arn must be an IAM role ARN."
  }
}

variable "quarantine_caller_arn" {
  description = "The spendwatch Slack role (output slack_role_arn): the only principal the quarantine role trusts. Null: no quarantine role in this account."
  type        = string
  default     = null

  validation {
    condition     = var.quarantine_caller_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.quarantine_caller_arn))
    error_message = "quarantine_caller_arn must be an IAM role ARN or null."
  }
}

variable "approver_caller_arns" {
  description = "The spendwatch roles that apply and sweep GPU-launch approvals (output approver_caller_arns of the aws module: the Slack and scan roles): the only principals the approver role trusts. Empty: no approver role in this account."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.approver_caller_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", a))])
    error_message = "approver_caller_arns must be IAM role ARNs."
  }
}

variable "external_id" {
  description = "External ID the read and quarantine roles require from their caller (optional; must match the aws module's external_id). The approver role requires none."
  type        = string
  default     = null

  validation {
    condition     = var.external_id == null || can(regex("^[A-Za-z0-9+=,.@:/-]{2,1224}$", var.external_id))
    error_message = "external_id must be 2-1224 characters of [A-Za-z0-9+=,.@:/-]."
  }
}

variable "read_role_name" {
  description = "Name of the read role (the scanner assumes it by this name)."
  type        = string
  default     = "spendwatch-read"
}

variable "quarantine_role_name" {
  description = "Name of the quarantine role (the Slack function assumes it by this name)."
  type        = string
  default     = "spendwatch-quarantine"
}

variable "approver_role_name" {
  description = "Name of the approver role (spendwatch assumes it by this name: SPENDWATCH_AWS_APPROVER_ROLE_NAME; the AWS guardrail's default approver ARN is arn:aws:iam::*:role/spendwatch-approver)."
  type        = string
  default     = "spendwatch-approver"
}

variable "protected_role_arns" {
  description = "Further roles the quarantine and approver roles may never put or delete policies on (spendwatch's own roles elsewhere)."
  type        = list(string)
  default     = []
}

variable "s3_bucket_arns" {
  description = "Buckets in this account spendwatch reads; narrows the S3 statement. Empty: Resource \"*\"."
  type        = list(string)
  default     = []
}

variable "s3_kms_key_arns" {
  description = "KMS keys of those buckets (kms:Decrypt through S3 only). Empty: none."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for the roles and policies."
  type        = map(string)
  default     = {}
}
