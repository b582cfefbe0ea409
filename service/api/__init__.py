"""The HTTP edge: thin routes over the hub, one error mapping, body decoding."""
