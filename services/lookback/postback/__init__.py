"""The postback dispatcher: durable server-to-server postbacks with retries."""
