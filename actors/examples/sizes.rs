//! Prints the in-memory sizes of the per-person types (for memory tuning).
fn main() {
    use presence_actors::model::*;
    println!("Slot {}", std::mem::size_of::<Slot>());
    println!("UserPresence {}", std::mem::size_of::<UserPresence>());
    println!("MergedView {}", std::mem::size_of::<MergedView>());
    println!("Activity {}", std::mem::size_of::<Activity>());
    println!("Version {}", std::mem::size_of::<Option<Version>>());
    println!("Change {}", std::mem::size_of::<presence_actors::fanout::Change>());
    println!("Person {}", std::mem::size_of::<presence_actors::directory::Person>());
    println!("Absence {}", std::mem::size_of::<Absence>());
}
