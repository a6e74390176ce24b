"""The authentication core: every front end asks it one question, it asks the store."""
