"""portal front end."""
