# Read an environment variable, with a default when it is unset or empty.
name: default:
let value = builtins.getEnv name; in
if value == "" then default else value
