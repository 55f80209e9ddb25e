"""One-off performance experiments; nothing in the product imports them."""
