"""Who can acquire compute: static access analysis of cloud identities (issue 11)."""
