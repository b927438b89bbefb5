"""onair: live video encoding on Kubernetes."""
