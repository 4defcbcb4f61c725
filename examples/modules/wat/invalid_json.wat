;; invalid_json.wat: misbehaves on purpose. A reporter whose output is cut
;; off in the middle and is not JSON: the host reports bad_output.
(module
  (import "coordinatord" "output" (func $output (param i32 i32)))

  (memory (export "memory") 1)

  ;; [16, 52): 36 bytes of unterminated JSON.
  (data (i32.const 16) "{\"records\":[{\"sink\":\"results\",\"data\"")

  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: a fixed buffer at 1024 (0 if the event does not fit).
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $output (i32.const 16) (i32.const 36))
    (i32.const 0))
)
