"""A node pack whose only content is a frontend extension, as many packs ship one (WEB_DIRECTORY)."""
NODE_CLASS_MAPPINGS = {}
WEB_DIRECTORY = "./js"
