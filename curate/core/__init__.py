"""The ground layer: errors and one-line messages, atomic writes and recipe reading, cache keys and
resumable chunked jobs, device and dtype choice. Nothing here imports torch or transformers at
module level, and nothing here imports any other curatekit package."""
