"""Speed, request-count and memory checks for Keyturn (``make bench``)."""
