"""Speed and memory figures (docs/benchmarks.md): scripts run as `python bench/<name>.py`,
each printing one JSON object of figures as its last line. The top layer: it may import any
package of the project, and none imports it (.importlinter)."""
