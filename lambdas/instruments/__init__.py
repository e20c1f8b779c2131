"""The instruments Lambda: Kite's daily instruments dump, validated, to S3 and PostgreSQL."""
