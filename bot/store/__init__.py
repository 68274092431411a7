"""Storage: the engine, the tables, the migrations."""
