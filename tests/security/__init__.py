"""Evidence that the function keeps its promises under bad input, faults and load."""
