"""The paper trader: fills decisions against the books of the moment and keeps a ledger."""
