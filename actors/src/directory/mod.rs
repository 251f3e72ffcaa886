//! TEMPORARY stub of the directory (replaced by the real module).
use serde::{Deserialize, Serialize};
pub type UserIdx = u32;
pub type DeptIdx = u32;
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person { pub id: Box<str>, pub name: Box<str>, pub department: Option<Box<str>> }
#[derive(Clone, Debug, Default)]
pub struct NumberPlan;
pub struct Directory { people: Vec<Person>, ids: std::collections::HashMap<Box<str>, UserIdx>, depts: Vec<Box<str>> }
pub struct SearchQuery<'a> { pub q: &'a str, pub department: Option<&'a str>, pub limit: usize, pub offset: usize }
pub struct SearchResult { pub total: usize, pub items: Vec<UserIdx> }
impl Directory {
    pub fn build(people: Vec<Person>, _plan: &NumberPlan) -> Result<Directory, String> {
        let ids = people.iter().enumerate().map(|(i, p)| (p.id.clone(), i as UserIdx)).collect();
        let mut depts: Vec<Box<str>> = people.iter().filter_map(|p| p.department.clone()).collect();
        depts.sort(); depts.dedup();
        Ok(Directory { people, ids, depts })
    }
    pub fn len(&self) -> usize { self.people.len() }
    pub fn is_empty(&self) -> bool { self.people.is_empty() }
    pub fn person(&self, idx: UserIdx) -> Option<&Person> { self.people.get(idx as usize) }
    pub fn people(&self) -> impl Iterator<Item = (UserIdx, &Person)> { self.people.iter().enumerate().map(|(i, p)| (i as UserIdx, p)) }
    pub fn by_id(&self, id: &str) -> Option<UserIdx> { self.ids.get(id).copied() }
    pub fn resolve(&self, key: &str) -> Option<UserIdx> { self.by_id(key) }
    pub fn department_of(&self, idx: UserIdx) -> Option<DeptIdx> { let d = self.person(idx)?.department.as_ref()?; self.depts.iter().position(|x| x == d).map(|i| i as DeptIdx) }
    pub fn department_idx(&self, name: &str) -> Option<DeptIdx> { self.depts.iter().position(|x| &**x == name).map(|i| i as DeptIdx) }
    pub fn departments(&self) -> Vec<(&str, usize)> { self.depts.iter().map(|d| (&**d, 0)).collect() }
    pub fn search(&self, q: &SearchQuery) -> SearchResult { let items: Vec<UserIdx> = self.people().filter(|(_, p)| p.name.to_lowercase().contains(&q.q.to_lowercase())).map(|(i, _)| i).collect(); SearchResult { total: items.len(), items: items.into_iter().skip(q.offset).take(q.limit).collect() } }
    pub fn memory_bytes(&self) -> usize { 0 }
}
