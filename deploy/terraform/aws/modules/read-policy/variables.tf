variable "read_role_arns" {
  description = "Roles the read identity may assume (the member read roles); narrows the read policy's sts:AssumeRole."
  type        = list(string)

  validation {
    condition     = length(var.read_role_arns) > 0 && alltrue([for a in var.read_role_arns : can(regex("^arn:aws[a-z-]*:iam::([0-9]{12}|\\*):role/.+$", a))])
    error_message = "read_role_arns must be one or more IAM role ARNs (the account may be \"*\")."
  }
}

variable "s3_bucket_arns" {
  description = "Buckets to narrow the S3 statement to (ListBucket on buckets, GetObject on their objects). Empty: Resource \"*\"."
  type        = list(string)
  default     = []
}

variable "s3_kms_key_arns" {
  description = "KMS keys of those buckets; adds kms:Decrypt on them, only through S3. Empty: none."
  type        = list(string)
  default     = []
}
