# The read policy, from ../../policies/read.json (generated from connectors/aws/permissions.py). It grants exactly
# the actions in that file; only Resources are narrowed here, never Actions:
# - the "SpendwatchReadSts" statement's sts:AssumeRole goes to the member read roles only;
# - the "SpendwatchReadS3" statement is split into s3:ListBucket on the buckets and the rest on their objects,
#   when s3_bucket_arns is set;
# - kms:Decrypt on the buckets' keys (through S3 only) is the one addition, and only when s3_kms_key_arns is set.

locals {
  declared   = jsondecode(file("${path.module}/../../policies/read.json"))
  statements = local.declared.Statement
  s3_scoped  = length(var.s3_bucket_arns) > 0
  kms        = length(var.s3_kms_key_arns) > 0 ? ["kms"] : []

  document = {
    Version = "2012-10-17"
    Statement = concat(
      [for s in local.statements : { Sid = s.Sid, Effect = s.Effect, Action = s.Action, Resource = ["*"] }
      if !contains(["SpendwatchReadSts", "SpendwatchReadS3"], s.Sid)],
      [for s in local.statements : { Sid = s.Sid, Effect = s.Effect, Action = s.Action, Resource = var.read_role_arns }
      if s.Sid == "SpendwatchReadSts"],
      [for s in local.statements : { Sid = s.Sid, Effect = s.Effect, Action = s.Action, Resource = ["*"] }
      if s.Sid == "SpendwatchReadS3" && !local.s3_scoped],
      [for s in local.statements : {
        Sid = "SpendwatchReadS3Buckets", Effect = s.Effect, Resource = var.s3_bucket_arns
        Action = [for a in s.Action : a if a == "s3:ListBucket"]
      } if s.Sid == "SpendwatchReadS3" && local.s3_scoped],
      [for s in local.statements : {
        Sid = "SpendwatchReadS3Objects", Effect = s.Effect, Resource = [for b in var.s3_bucket_arns : "${b}/*"]
        Action = [for a in s.Action : a if a != "s3:ListBucket"]
      } if s.Sid == "SpendwatchReadS3" && local.s3_scoped],
      [for k in local.kms : {
        Sid = "SpendwatchReadS3Kms", Effect = "Allow", Action = ["kms:Decrypt"], Resource = var.s3_kms_key_arns
        Condition = { StringLike = { "kms:ViaService" = "s3.*.amazonaws.com" } }
      }],
    )
  }
}
