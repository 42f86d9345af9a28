"""What the gateway shows of itself: Prometheus metrics and their exposition, the function log store."""
