"""aiohttp routes, grouped like the Lambda REST API."""
