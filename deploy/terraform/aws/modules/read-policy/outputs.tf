output "json" {
  description = "The read policy document, JSON."
  value       = jsonencode(local.document)
}

output "declared_actions" {
  description = "The actions the code declares (policies/read.json), for checks and documentation."
  value       = sort(distinct(flatten([for s in local.statements : s.Action])))
}
