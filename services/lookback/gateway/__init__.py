"""The HTTP gateway for app SDKs and attribution links."""
