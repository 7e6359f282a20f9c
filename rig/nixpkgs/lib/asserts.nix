# lib.asserts (the counterpart of nixpkgs' lib/asserts.nix).  assertMsg and
# assertOneOf live in trivial.nix (they are in the flat lib too).
{ lib }:
{
  inherit (lib.trivial) assertMsg assertOneOf;

  assertEachOneOf = name: vals: xs:
    lib.assertMsg (lib.all (val: lib.elem val xs) vals)
      "each element in ${name} must be one of ${lib.generators.toPretty { } xs}, but is: ${lib.generators.toPretty { } vals}";

  # What NixOS' top-level.nix does with `assertions` and `warnings`: throw
  # "\nFailed assertions:\n- A\n- B" (no newline at the end) when some
  # assertion is false, else return `val` with every warning shown (lib.warn).
  checkAssertWarn = assertions: warnings: val:
    let
      failedAssertions = map (x: x.message) (lib.filter (x: !x.assertion) assertions);
    in
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${lib.concatStringsSep "\n" (map (x: "- ${x}") failedAssertions)}"
    else
      lib.showWarnings warnings val;
}
