"""The built-in task: seeded show-your-work arithmetic, its eval sets and its scorer."""
