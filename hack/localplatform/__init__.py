"""The real local platform for development and tests: Kubernetes control plane, kwok, a process node, S3."""
