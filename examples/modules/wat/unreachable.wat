;; unreachable.wat: misbehaves on purpose. A reporter whose handlers reach an
;; `unreachable` instruction two calls deep: every call traps, and the trap
;; report carries a guest stack of three frames.
(module
  (memory (export "memory") 1)

  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: a fixed buffer at 1024 (0 if the event does not fit).
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))

  (func $check_fields unreachable)
  (func $parse_event (call $check_fields))

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $parse_event)
    (i32.const 0))

  (func (export "coordinatord_on_lease_event") (param i32 i32) (result i32)
    (call $parse_event)
    (i32.const 0))
)
