"""The trading API function: orders, portfolio, margins and GTT behind API Gateway (REST)."""
