"""mlws workspace runtime: `mlws start`, the nginx gateway, the supervisor and the login service."""
