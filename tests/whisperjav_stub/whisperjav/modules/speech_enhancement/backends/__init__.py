"""The enhancer classes the factory creates."""
