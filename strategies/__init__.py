"""Pure decision logic (no Ray): agents map what is known at bar t to target weights."""
