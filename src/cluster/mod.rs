//! Kubernetes I/O shell.
