"""Function URLs: their configs (configs.py), recognising and authorising a URL request (router.py), and serving it
(serving.py: the 2.0 event, the function's answer as HTTP, CORS)."""
