"""Lambda functions: thin handlers over pure logic and dal/broker adapters."""
