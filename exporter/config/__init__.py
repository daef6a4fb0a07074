"""The configuration: its schema (frozen, typed objects) and the parser that fills them."""
