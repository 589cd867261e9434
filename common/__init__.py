"""What every role of the testbed shares (the network description, JSON lines, keys, the schema
machinery); it imports no other package of the project, and every other package may import it."""
