"""radius front end."""
